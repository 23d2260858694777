def main():
    a = {"self": []}
    a["self"].append(a)
    return a
