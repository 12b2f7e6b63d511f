"""The web app over the one command (`make app`, `python -m webapp.app`): the last layer, above evaluation (it shows
the judge's reading of each edit)."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: nothing leaves the machine
