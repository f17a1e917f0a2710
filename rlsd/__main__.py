from rlsd.cli import app

app()
