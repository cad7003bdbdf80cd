from predstream.cli import app

app(prog_name="predstream")
