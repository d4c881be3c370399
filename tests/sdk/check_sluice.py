"""Checks that the official OpenAI SDK, pointed at Sluice, works unchanged.

Usage: python check_sluice.py http://127.0.0.1:PORT TENANT_TOKEN

Sluice's /v1/chat/completions runs each request as a realtime job (queue, worker, provider,
store); this script is an application that knows nothing of that. It covers a plain call, a
streamed call whose pieces add up to the stored answer, a tool call, routes served by each
provider family, and an error the SDK must raise as its own type. Exits non-zero on any
wrong value or any exception the SDK raises while parsing.
"""

import sys
import uuid

import openai

import checks
from checks import check

ROOT = sys.argv[1].rstrip("/")
TOKEN = sys.argv[2]
RUN = uuid.uuid4().hex[:8]


client = openai.OpenAI(base_url=f"{ROOT}/v1", api_key=TOKEN, max_retries=0, timeout=30)

# Plain, on each API family's route: the application never knows which provider answered.
for model in ["fast", "writer", "flash"]:
    answer = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Hello from the SDK ({RUN}, {model})"},
        ],
    )
    check(answer.object == "chat.completion", f"{model}: object {answer.object}")
    check(answer.choices[0].message.role == "assistant", f"{model}: role")
    check(bool(answer.choices[0].message.content), f"{model}: empty content")
    check(answer.choices[0].finish_reason == "stop", f"{model}: {answer.choices[0].finish_reason}")
    check(answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0, f"{model}: usage")

    # The same request, streamed: the pieces add up to an answer of the same shape.
    pieces, finish, usage, ids = [], None, None, set()
    with client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"Stream to the SDK ({RUN}, {model})"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as stream:
        for chunk in stream:
            ids.add(chunk.id)
            if chunk.usage:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                if choice.finish_reason:
                    finish = choice.finish_reason
    check(len(pieces) > 1, f"{model}: streamed in {len(pieces)} piece(s)")
    check(finish == "stop", f"{model}: stream finish {finish}")
    check(usage is not None and usage.completion_tokens > 0, f"{model}: stream usage {usage}")
    check(len(ids) == 1, f"{model}: one job id across the stream, got {ids}")

    # Without stream_options, as most code is written: every chunk has a choices[0] (the
    # usage chunk, which has none, comes only to a client that asked for it).
    plain = []
    for chunk in client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"Stream to the SDK ({RUN}, {model})"}],
        stream=True,
    ):
        check(chunk.usage is None, f"{model}: usage in a stream that did not ask for it")
        plain.append(chunk.choices[0].delta.content or "")
    check("".join(plain) == "".join(pieces), f"{model}: the plain stream differs")

# Tool calling through Sluice.
tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}]
called = client.chat.completions.create(
    model="fast",
    messages=[{"role": "user", "content": f"Weather in Lisbon? ({RUN})"}],
    tools=tools,
    tool_choice="required",
)
check(called.choices[0].finish_reason == "tool_calls", f"tool finish {called.choices[0].finish_reason}")
call = called.choices[0].message.tool_calls[0]
check(call.function.name == "get_weather", f"tool name {call.function.name}")

# An error raises the SDK's own typed error, with Sluice's message.
try:
    client.chat.completions.create(
        model="no-such-model", messages=[{"role": "user", "content": "hi"}]
    )
    raise AssertionError("an unknown model did not raise")
except openai.NotFoundError as error:
    # OpenAI's own answer for a model it does not serve: 404 `model_not_found`.
    check("no-such-model" in str(error), f"unknown model message: {error}")
    check(error.code == "model_not_found", f"unknown model code: {error.code}")

print(f"{checks.count} checks passed")
