"""The training comparison: one byte-level transformer LM on the standard library's sources,
trained with AdamW, Adafactor, LDAdam, Adapprox and MicroAdam under the same initialization, data
order, schedule and step budget. Run it with ``smallstate-compare`` or
``python -m optimizers.comparison``; see docs/getting-started.md.
"""
