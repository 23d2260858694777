def main():
    return {"data": b"raw"}
