def main(data):
    return {"sum": sum(data["numbers"]), "name": data["name"].upper(), "echo": data}
