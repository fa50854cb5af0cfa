"""Measurement code behind ``scripts/``: serving speed (:mod:`.serving`, :mod:`.report`), memory
(:mod:`.memory`), the app server they run (:mod:`.server`) and the timing tools they share
(:mod:`.timing`). The scripts parse arguments and print."""
