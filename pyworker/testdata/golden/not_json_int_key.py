def main():
    return {"ok": {1: "one"}}
