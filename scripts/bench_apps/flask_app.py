"""A Flask hello-world, for the case where a framework's own per-request cost dominates."""

from flask import Flask

app = Flask(__name__)


@app.route("/")
def index():
    return "Hello, World!"
