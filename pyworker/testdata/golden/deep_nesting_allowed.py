def main():
    # 200 nested containers: the deepest the protocol allows.
    v = 1
    for i in range(200):
        v = [v] if i % 2 else {"k": v}
    return v
