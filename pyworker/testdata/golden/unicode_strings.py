def main():
    print("héllo wörld ✓ 日本")
    return {"text": "héllo ✓ 日本 😀", "clé": "\u2028\x00\x1f\"\\"}
