def main():
  print('hello')
  return {"msg": "done"}
