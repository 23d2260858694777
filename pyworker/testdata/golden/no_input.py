def main(*args):
    # Without input, main is called with no argument at all.
    return {"args": len(args)}
