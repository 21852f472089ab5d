import sys

from tflite_export._cli import main

sys.exit(main(prog="python -m tflite_export"))
