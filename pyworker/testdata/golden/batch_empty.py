def main(record):
    return record
