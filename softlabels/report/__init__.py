"""`softlabels inspect`: what a teacher's cache knows, as numbers (report.json), words (report.md) and
pictures.

- `inspect`: reads a sample of the cache's rows and assembles the report (`inspect_cache`, `compute_report`);
- `statistics`: the numbers (accuracy, calibration, confidence, coverage, views, teachers), numpy only;
- `markdown`: report.md; `plots`: the PNG figures (matplotlib's object API, never pyplot).
"""
