"""A WSGI app for gunicorn, whose sync workers wait with select(), not epoll."""


def app(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from gunicorn"]
