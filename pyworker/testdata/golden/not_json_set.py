def main():
    return {"a": [0, 1, {2, 3}]}
