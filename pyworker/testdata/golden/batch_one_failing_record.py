def main(record):
    print("processing", record["id"])
    if record["id"] == 2:
        raise ValueError("record 2 is bad")
    return {"id": record["id"], "double": record["value"] * 2}
