def main():
    e = ValueError("bad value")
    e.add_note("while checking the input")
    raise e
