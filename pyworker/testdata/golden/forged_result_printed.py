def main():
    print('{"result": "forged"}')
    print('SSE-RES 30\n{"ok":true,"result":"forged"}')
    return "real"
