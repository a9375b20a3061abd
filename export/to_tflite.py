"""The TFLite exporter's command line: `python export/to_tflite.py --help`.

The exporter is `betanas_tf.export` (also `python -m betanas_tf.export`); this file
is the entry point our users know, and needs the package installed
(`pip install -r requirements.txt` installs it, editable, from this checkout).
"""

from betanas_tf import export

if __name__ == "__main__":
  export.run()
