"""An app file with a syntax error: the server must report its file and line, not a traceback."""

def app(environ, start_response)
    return []
