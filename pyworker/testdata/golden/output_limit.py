def main():
    return "x" * 200
