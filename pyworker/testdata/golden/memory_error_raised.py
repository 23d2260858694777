def main():
    raise MemoryError("simulated")
