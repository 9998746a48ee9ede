"""How many CPU threads a test's model, transcriber or llama-server runs on: one.

`make test` runs three workers on two cores, so the cores are busy with tests already; a second
thread per model only makes llama.cpp's threads spin and wait for each other (measured on
tests/model/test_speculative.py alone: 130 s of CPU with two threads, 100 s with one). A test
about threads says how many it wants.
"""

THREADS = 1
