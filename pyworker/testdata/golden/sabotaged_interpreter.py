import builtins
import os
import sys

# A script that breaks what a worker might rely on must still get its result
# reported.
for name in ("len", "isinstance", "issubclass", "str", "repr", "callable", "type", "id", "getattr", "print"):
    setattr(builtins, name, None)
os.write = None
os.close = None
os._exit = None
sys.settrace(lambda *a: None)
sys.setrecursionlimit(50)


def main():
    del sys.stdout
    del sys.stderr
    sys.modules.clear()
    return {"still": ["fine", 1, 2.5]}
