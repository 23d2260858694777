def main():
    # 201 nested lists: one level over the limit.
    v = 1
    for _ in range(201):
        v = [v]
    return v
