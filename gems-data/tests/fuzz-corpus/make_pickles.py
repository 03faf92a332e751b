"""Writes the pickle seeds of the fuzz corpus: small, valid `to_dict()` pickles of a UniSAR-style
table (columns user_id, item_id, ts), in each orient and in protocols 0, 2 and 4, so that the
fuzzer mutates the text opcodes, the `_codecs.encode` bytes of protocol 2 and the binary ones.
Plain Python, no pandas: `python make_pickles.py` in this folder."""
import pickle

rows = [(1, 11, 1400000100), (1, 12, 1400000300.0), (2, 11, 1400000150)]
columns = ["user_id", "item_id", "ts"]
as_list = {c: [r[i] for r in rows] for i, c in enumerate(columns)}
as_dict = {c: {k: r[i] for k, r in enumerate(rows)} for i, c in enumerate(columns)}
as_index = {k: dict(zip(columns, r)) for k, r in enumerate(rows)}
as_records = [dict(zip(columns, r)) for r in rows]
with_text = dict(as_list, keyword=[b"\x00\xff", "[8, 9]", (5, 6)])

for name, value, protocol in [
    ("list-p0", as_list, 0),
    ("list-p2", with_text, 2),
    ("dict-p4", as_dict, 4),
    ("index-p4", as_index, 4),
    ("records-p5", as_records, 5),
]:
    with open(f"pickle/{name}.pkl", "wb") as file:
        pickle.dump(value, file, protocol=protocol)
