"""The bundled sample: every MAEC earnings call of calendar quarter 2016Q4 (173 firms).

Real transcripts from MAEC (Li, Yang, Smyth and Dong, CIKM 2020), licensed CC BY-SA 4.0; see
README.md beside this file for the credit, the licence and what was changed.
"""

from pathlib import Path

PATH = Path(__file__).with_name("maec-2016Q4.jsonl.gz")
QUARTER = "2016Q4"
