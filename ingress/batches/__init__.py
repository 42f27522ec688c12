"""The Batch API's work: a batch runs as a Ray Data pipeline over its input file.

POST /batches (ingress/endpoints/batches.py) → a row in the state store, `validating`
→ the supervisor (supervisor.py, a Serve deployment beside the ingress) claims it:
    input.py    checks every line (JSONL, custom_id once, method, url, one model) and
                writes the requests Ray Data reads; a bad file fails the batch here
    runner.py   the pipeline: read → skip lines already done → hand each block to a
                caller (caller.py: the supervisor's Ray actors, kept across batches)
                that calls the model's Serve application through the online endpoint's
                own code (same wire types, bounds and forwarding), at most
                `online_share` of its capacity in flight
    checkpoint  finished lines in parts under the batch's blob prefix: a supervisor
                that restarts resumes where they end, and each custom_id is output once
→ finalizing: the output and error files, then completed (or cancelled / expired with
  the lines done so far).
"""
