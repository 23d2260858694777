def main():
    blocks = [0] * (1 << 62)
    return len(blocks)
