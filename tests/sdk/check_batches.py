"""Checks that a program written for the official OpenAI SDK's batch calls runs unchanged
against Sluice's Files and Batches API.

Usage: python check_batches.py http://127.0.0.1:PORT TENANT_TOKEN

The workflow of OpenAI's batch guide: upload a JSONL file (purpose "batch"), create a batch,
poll it until it is final, download the output and error files and join them on custom_id;
also list batches, cancel one, list and delete files (a file an unfinished batch reads is a
409), and the SDK's own error types for a bad endpoint and an unknown id. Exits non-zero on any wrong value or any exception the SDK raises while parsing.
"""

import io
import itertools
import json
import sys
import time
import uuid

import openai

import checks
from checks import check

ROOT = sys.argv[1].rstrip("/")
TOKEN = sys.argv[2]
RUN = uuid.uuid4().hex[:8]


def requests_file(n, fail=()):
    lines = []
    for i in range(n):
        content = "[sim fail=400] refuse" if i in fail else f"Classify item {i} ({RUN})"
        lines.append(json.dumps({
            "custom_id": f"request-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "fast", "messages": [{"role": "user", "content": content}],
                     "max_tokens": 50},
        }))
    return ("\n".join(lines) + "\n").encode()


def wait(batch_id, until=("completed", "failed", "expired", "cancelled")):
    for _ in range(600):
        batch = client.batches.retrieve(batch_id)
        if batch.status in until:
            return batch
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} stayed {batch.status}")


client = openai.OpenAI(base_url=f"{ROOT}/v1", api_key=TOKEN, max_retries=0, timeout=30)

# Upload, create, poll, download: the guide's workflow, unchanged.
data = requests_file(8, fail={5})
uploaded = client.files.create(file=("requests.jsonl", io.BytesIO(data)), purpose="batch")
check(uploaded.id.startswith("file-") and uploaded.bytes == len(data), f"file {uploaded}")
check(uploaded.purpose == "batch", f"purpose {uploaded.purpose}")
check(client.files.retrieve(uploaded.id).filename == "requests.jsonl", "retrieve file")
check(client.files.content(uploaded.id).content == data, "input content round-trips")

batch = client.batches.create(
    input_file_id=uploaded.id,
    endpoint="/v1/chat/completions",
    completion_window="24h",
    metadata={"description": f"sdk check {RUN}"},
)
check(batch.status in ("validating", "in_progress"), f"created as {batch.status}")
check(batch.metadata == {"description": f"sdk check {RUN}"}, f"metadata {batch.metadata}")
done = wait(batch.id)
check(done.status == "completed", f"status {done.status}: {done.errors}")
counts = done.request_counts
check((counts.total, counts.completed, counts.failed) == (8, 7, 1), f"counts {counts}")
check(done.completed_at and done.completed_at >= done.created_at, "completed_at")
check(done.output_file_id and done.error_file_id, "output and error files")

results = [json.loads(line) for line in client.files.content(done.output_file_id).text.splitlines()]
errors = [json.loads(line) for line in client.files.content(done.error_file_id).text.splitlines()]
by_id = {r["custom_id"]: r for r in results + errors}
check(sorted(by_id) == sorted(f"request-{i}" for i in range(8)), f"custom_ids {sorted(by_id)}")
for r in results:
    check(r["response"]["status_code"] == 200, f"{r['custom_id']}: {r['response']}")
    check(r["response"]["body"]["choices"][0]["message"]["content"], f"{r['custom_id']}: empty")
check(errors[0]["custom_id"] == "request-5" and errors[0]["response"]["status_code"] == 400,
      f"error line {errors[0]}")

# List: the new batch first, and the cursor pages through.
listed = client.batches.list(limit=10)
check(listed.data[0].id == batch.id, f"list starts with {listed.data[0].id}")

# Cancel a batch; its status reaches cancelling or cancelled at once.
second = client.files.create(file=("more.jsonl", io.BytesIO(requests_file(3))), purpose="batch")
other = client.batches.create(input_file_id=second.id, endpoint="/v1/chat/completions",
                              completion_window="24h")
try:
    cancelled = client.batches.cancel(other.id)
    check(cancelled.status in ("cancelling", "cancelled"), f"cancel gave {cancelled.status}")
except openai.ConflictError:
    pass  # it had already completed: nothing left to cancel
final = wait(other.id)
check(final.status in ("cancelled", "completed"), f"cancelled batch ended {final.status}")
# Iterating a page fetches the next ones through the `after` cursor.
pages = [b.id for b in itertools.islice(client.batches.list(limit=1), 2)]
check(pages[:2] == [other.id, batch.id], f"paging {pages[:2]}")

# Errors come back as the SDK's own exception types.
try:
    client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings",
                          completion_window="24h")
    check(False, "an embeddings batch was accepted")
except openai.BadRequestError as e:
    check("endpoint" in str(e), f"bad endpoint error {e}")
try:
    client.batches.retrieve("batch_" + "0" * 32)
    check(False, "an unknown batch was found")
except openai.NotFoundError:
    pass

# Files: listed newest first, paged through the cursor; deleted once their batch is done.
files = client.files.list()
check([f.id for f in files.data][:2] == [second.id, uploaded.id], f"files {files.data}")
check(all(f.object == "file" and f.purpose == "batch" for f in files.data), "file objects")
paged = [f.id for f in itertools.islice(client.files.list(limit=1), 2)]
check(paged == [second.id, uploaded.id], f"file paging {paged}")
check([f.id for f in client.files.list(order="asc", purpose="batch").data][-1] == second.id,
      "ascending order")
gone = client.files.delete(uploaded.id)
check(gone.id == uploaded.id and gone.deleted and gone.object == "file", f"delete {gone}")
check(uploaded.id not in [f.id for f in client.files.list().data], "deleted file still listed")
check(client.batches.retrieve(batch.id).status == "completed", "batch outlives its input file")
try:
    client.files.retrieve(uploaded.id)
    check(False, "a deleted file was found")
except openai.NotFoundError:
    pass
try:
    client.files.delete(done.output_file_id)
    check(False, "an output file was deleted")
except openai.BadRequestError as e:
    check("view" in str(e), f"output file delete error {e}")

print(f"{checks.count} checks passed")
