def main():
    # Encoded ASCII-only, so a lone surrogate travels as \ud800.
    return {"lone": "a\ud800b", "low": "\udfff"}
