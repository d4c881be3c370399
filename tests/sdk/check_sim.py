"""Checks that the official OpenAI, Anthropic and Gemini SDKs accept Sluice's simulator.

Usage: python check_sim.py http://127.0.0.1:PORT

For each family: a plain call, a streamed call (same token counts), a tool call followed by
a tool-result turn, JSON mode, and every error class raising the SDK's own typed error. Then
each family's batch API through the SDK's own batch calls: create, poll until ended, read the
results (equal to the realtime answer), an item failed by a [sim batch=…] directive, cancel,
list, and an unknown id. The simulator must end batches within a second or two.
Retries are off and every base URL points at the simulator, so nothing leaves the machine.
Exits non-zero on the first wrong value or any exception the SDK raises while parsing.
"""

import io
import json
import sys
import time
import uuid

import anthropic
import openai
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gtypes

import checks
from checks import check

ROOT = sys.argv[1].rstrip("/")
KEY = "sk-sim-test"
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
}
# Fail plans count calls per request: a fresh word per run keeps a rerun against the same
# simulator from finding its plans spent.
RUN = uuid.uuid4().hex[:8]


def expect_error(kind, call, what, status=None):
    try:
        call()
    except kind as error:
        code = getattr(error, "status_code", None) or getattr(error, "code", None)
        check(status is None or code == status, f"{what}: status {code}, wanted {status}")
        return error
    except Exception as error:  # noqa: BLE001 - the wrong type is the failure
        raise AssertionError(f"{what}: raised {type(error).__name__}: {error}") from error
    raise AssertionError(f"{what}: no error raised, wanted {kind.__name__}")


def wait_for(read, done, what):
    """Polls `read` until `done` holds of its value (for at most 10 s); returns that value."""
    for _ in range(200):
        value = read()
        if done(value):
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: still not done: {value}")


def check_openai():
    client = openai.OpenAI(base_url=f"{ROOT}/v1", api_key=KEY, max_retries=0, timeout=10)
    messages = [{"role": "user", "content": "Say hello to the queue"}]

    plain = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    text = plain.choices[0].message.content
    check(text.startswith('This is a simulated answer to "Say hello to the queue"'), text)
    check(plain.choices[0].finish_reason == "stop", plain.choices[0].finish_reason)
    check(plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens, "total")

    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    check(len(pieces) > 2, f"streamed in {len(pieces)} pieces")
    check("".join(pieces) == text, "streamed text equals the plain text")
    check(finish == "stop", finish)
    check(usage is not None and usage.completion_tokens == plain.usage.completion_tokens, "stream usage")
    check(usage.prompt_tokens == plain.usage.prompt_tokens, "stream prompt tokens")

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]
    ask = [{"role": "user", "content": "Weather in Oslo?"}]
    called = client.chat.completions.create(model="m", messages=ask, tools=tools, tool_choice="required")
    call = called.choices[0].message.tool_calls[0]
    check(called.choices[0].finish_reason == "tool_calls", called.choices[0].finish_reason)
    args = json.loads(call.function.arguments)
    check(args["unit"] in ("celsius", "fahrenheit") and isinstance(args["city"], str), args)
    followup = ask + [
        called.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 3}'},
    ]
    answered = client.chat.completions.create(model="m", messages=followup, tools=tools)
    check("get_weather returned" in answered.choices[0].message.content, answered.choices[0].message.content)

    # Streamed tool call: arguments arrive in pieces by index.
    streamed = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Weather? [sim tool=get_weather]"}], tools=tools, stream=True
    )
    arguments, name = "", None
    for chunk in streamed:
        for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            name = delta.function.name or name
            arguments += delta.function.arguments or ""
    check(name == "get_weather" and json.loads(arguments) == args, (name, arguments))

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    structured = client.chat.completions.create(
        model="m",
        messages=ask,
        response_format={"type": "json_schema", "json_schema": {"name": "count", "schema": schema}},
    )
    check(json.loads(structured.choices[0].message.content) == {"n": 1}, structured.choices[0].message.content)

    def fault(directive, **extra):
        body = [{"role": "user", "content": f"Fault {RUN} [sim fail={directive}]"}]
        return lambda: client.chat.completions.create(model="m", messages=body, **extra)

    expect_error(openai.RateLimitError, fault("429"), "openai 429", 429)
    quota = expect_error(openai.RateLimitError, fault("quota"), "openai quota", 429)
    check(quota.code == "insufficient_quota", quota.code)
    expect_error(openai.InternalServerError, fault("500"), "openai 500", 500)
    expect_error(openai.BadRequestError, fault("400"), "openai 400", 400)
    expect_error(openai.AuthenticationError, fault("401"), "openai 401", 401)
    expect_error(openai.NotFoundError, fault("404"), "openai 404", 404)
    expect_error(openai.APIError, lambda: list(fault("midstream", stream=True)()), "openai midstream")
    expect_error(openai.APIConnectionError, fault("cut"), "openai cut")
    expect_error(openai.APITimeoutError, lambda: client.with_options(timeout=0.5).chat.completions.create(
        model="m", messages=[{"role": "user", "content": f"Hang {RUN} [sim fail=timeout]"}]), "openai timeout")


def check_anthropic():
    client = anthropic.Anthropic(base_url=ROOT, api_key=KEY, max_retries=0, timeout=10)
    messages = [{"role": "user", "content": "Say hello to the queue"}]

    plain = client.messages.create(model="claude-sim", max_tokens=200, messages=messages, system="Be brief.")
    check(plain.id.startswith("msg_") and plain.type == "message" and plain.role == "assistant", plain.id)
    text = plain.content[0].text
    check(text.startswith('This is a simulated answer to "Say hello to the queue"'), text)
    check(plain.stop_reason == "end_turn" and plain.stop_sequence is None, plain.stop_reason)

    def with_cache(n):
        body = [{"role": "user", "content": f"Say hello to the queue [sim cached={n}]"}]
        return client.messages.create(model="m", max_tokens=200, messages=body).usage

    cached, uncached = with_cache(4), with_cache(0)
    check(cached.cache_read_input_tokens == 4 and uncached.cache_read_input_tokens == 0, cached)
    check(cached.input_tokens + 4 == uncached.input_tokens, "input_tokens excludes cache reads")

    pieces = []
    with client.messages.stream(model="m", max_tokens=200, messages=messages, system="Be brief.") as stream:
        for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                pieces.append(event.delta.text)
        final = stream.get_final_message()
    check(len(pieces) > 2, f"streamed in {len(pieces)} pieces")
    check("".join(pieces) == text and final.content[0].text == text, "streamed text equals the plain text")
    check(final.usage.output_tokens == plain.usage.output_tokens, (final.usage, plain.usage))
    check(final.usage.input_tokens == plain.usage.input_tokens, "stream input tokens")
    check(final.stop_reason == "end_turn", final.stop_reason)

    cut = client.messages.create(model="m", max_tokens=3, messages=messages)
    check(cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3, cut.stop_reason)

    tools = [{"name": "get_weather", "description": "Weather", "input_schema": WEATHER_SCHEMA}]
    ask = [{"role": "user", "content": "Weather in Oslo?"}]
    called = client.messages.create(model="m", max_tokens=200, messages=ask, tools=tools, tool_choice={"type": "any"})
    use = called.content[0]
    check(called.stop_reason == "tool_use" and use.type == "tool_use" and use.id.startswith("toolu_"), called)
    check(use.input["unit"] in ("celsius", "fahrenheit"), use.input)
    followup = ask + [
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in called.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "3 degrees"}]},
    ]
    answered = client.messages.create(model="m", max_tokens=200, messages=followup, tools=tools)
    check("get_weather returned" in answered.content[0].text, answered.content[0].text)

    with client.messages.stream(
        model="m", max_tokens=200, messages=[{"role": "user", "content": "[sim tool=get_weather] Weather?"}], tools=tools
    ) as stream:
        final = stream.get_final_message()
    check(final.content[0].type == "tool_use" and final.content[0].input == use.input, final.content)

    def fault(directive, **extra):
        body = [{"role": "user", "content": f"Fault {RUN} [sim fail={directive}]"}]
        return lambda: client.messages.create(model="m", max_tokens=50, messages=body, **extra)

    limited = expect_error(anthropic.RateLimitError, fault("429"), "anthropic 429", 429)
    check(limited.response.headers.get("retry-after") is not None, "retry-after")
    check(limited.body["error"]["type"] == "rate_limit_error", limited.body)
    quota = expect_error(anthropic.RateLimitError, fault("quota"), "anthropic quota", 429)
    check("usage limits" in quota.message and quota.response.headers.get("retry-after") is None, quota.message)
    expect_error(anthropic.InternalServerError, fault("500"), "anthropic 500", 500)
    overloaded = expect_error(anthropic.InternalServerError, fault("529"), "anthropic 529", 529)
    check(overloaded.body["error"]["type"] == "overloaded_error", overloaded.body)
    expect_error(anthropic.BadRequestError, fault("400"), "anthropic 400", 400)
    expect_error(anthropic.AuthenticationError, fault("401"), "anthropic 401", 401)
    expect_error(
        anthropic.BadRequestError,
        lambda: client.messages.create(model="m", max_tokens=0, messages=messages),
        "anthropic max_tokens 0",
        400,
    )

    def midstream():
        with client.messages.stream(
            model="m", max_tokens=200, messages=[{"role": "user", "content": f"Long answer {RUN} [sim fail=midstream]"}]
        ) as stream:
            for _ in stream:
                pass

    expect_error(anthropic.APIStatusError, midstream, "anthropic midstream")
    expect_error(anthropic.APIConnectionError, fault("cut"), "anthropic cut")


def check_gemini():
    options = gtypes.HttpOptions(
        base_url=ROOT, api_version="v1beta", timeout=10_000, retry_options=gtypes.HttpRetryOptions(attempts=1)
    )
    client = genai.Client(api_key=KEY, http_options=options)
    model = "gemini-2.5-flash"

    plain = client.models.generate_content(model=model, contents="Say hello to the queue")
    text = plain.text
    check(text.startswith('This is a simulated answer to "Say hello to the queue"'), text)
    candidate = plain.candidates[0]
    check(candidate.finish_reason == gtypes.FinishReason.STOP, candidate.finish_reason)
    usage = plain.usage_metadata
    check(usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count, usage)
    check(plain.model_version == model and plain.response_id, plain.model_version)

    pieces, last = [], None
    for chunk in client.models.generate_content_stream(model=model, contents="Say hello to the queue"):
        pieces.append(chunk.text)
        last = chunk
    check(len(pieces) > 2, f"streamed in {len(pieces)} pieces")
    check("".join(pieces) == text, "streamed text equals the plain text")
    check(last.usage_metadata.candidates_token_count == usage.candidates_token_count, last.usage_metadata)
    check(last.candidates[0].finish_reason == gtypes.FinishReason.STOP, last.candidates[0].finish_reason)

    cached = client.models.generate_content(model=model, contents="Say hello to the queue [sim cached=4]")
    check(cached.usage_metadata.cached_content_token_count == 4, cached.usage_metadata)

    limited = client.models.generate_content(
        model=model, contents="A long story", config=gtypes.GenerateContentConfig(max_output_tokens=3)
    )
    check(limited.candidates[0].finish_reason == gtypes.FinishReason.MAX_TOKENS, limited.candidates[0])

    weather = gtypes.FunctionDeclaration(name="get_weather", description="Weather", parameters_json_schema=WEATHER_SCHEMA)
    config = gtypes.GenerateContentConfig(
        tools=[gtypes.Tool(function_declarations=[weather])],
        tool_config=gtypes.ToolConfig(function_calling_config=gtypes.FunctionCallingConfig(mode="ANY")),
        automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True),
    )
    ask = gtypes.Content(role="user", parts=[gtypes.Part(text="Weather in Oslo?")])
    called = client.models.generate_content(model=model, contents=[ask], config=config)
    call = called.function_calls[0]
    check(call.name == "get_weather" and call.args["unit"] in ("celsius", "fahrenheit"), call)
    check(called.candidates[0].finish_reason == gtypes.FinishReason.STOP, called.candidates[0].finish_reason)
    auto = gtypes.GenerateContentConfig(
        tools=config.tools, automatic_function_calling=gtypes.AutomaticFunctionCallingConfig(disable=True)
    )
    followup = [
        ask,
        called.candidates[0].content,
        gtypes.Content(
            role="user",
            parts=[gtypes.Part.from_function_response(name="get_weather", response={"output": "3 degrees"})],
        ),
    ]
    answered = client.models.generate_content(model=model, contents=followup, config=auto)
    check("get_weather returned" in answered.text, answered.text)

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    structured = client.models.generate_content(
        model=model,
        contents="Count",
        config=gtypes.GenerateContentConfig(response_mime_type="application/json", response_json_schema=schema),
    )
    check(json.loads(structured.text) == {"n": 1}, structured.text)

    def fault(directive):
        return lambda: client.models.generate_content(model=model, contents=f"Fault {RUN} [sim fail={directive}]")

    limited = expect_error(genai_errors.ClientError, fault("429"), "gemini 429", 429)
    check(limited.status == "RESOURCE_EXHAUSTED", limited.status)
    delays = [d.get("retryDelay") for d in limited.details["error"]["details"] if "RetryInfo" in d["@type"]]
    check(delays and delays[0].endswith("s"), delays)
    expect_error(genai_errors.ClientError, fault("quota"), "gemini quota", 429)
    expect_error(genai_errors.ServerError, fault("500"), "gemini 500", 500)
    expect_error(genai_errors.ServerError, fault("503"), "gemini 503", 503)
    expect_error(genai_errors.ClientError, fault("400"), "gemini 400", 400)

    def midstream():
        for _ in client.models.generate_content_stream(model=model, contents=f"Long answer {RUN} [sim fail=midstream]"):
            pass

    expect_error(genai_errors.ServerError, midstream, "gemini midstream", 503)


def check_openai_batches():
    client = openai.OpenAI(base_url=f"{ROOT}/v1", api_key=KEY, max_retries=0, timeout=10)
    question = [{"role": "user", "content": "Say hello to the queue"}]

    def line(custom_id, messages):
        body = {"model": "gpt-4o-mini", "messages": messages}
        return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})

    content = "\n".join(
        [line("hello", question), line("boom", [{"role": "user", "content": "Fail me [sim batch=error]"}])]
    ).encode()
    uploaded = client.files.create(file=("requests.jsonl", io.BytesIO(content)), purpose="batch")
    check(uploaded.id.startswith("file-") and uploaded.bytes == len(content), uploaded)
    check(client.files.retrieve(uploaded.id).filename == "requests.jsonl", "openai files.retrieve")

    def create():
        return client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"run": RUN}
        )

    batch = create()
    check(batch.status == "validating" and batch.metadata == {"run": RUN}, batch)
    done = wait_for(lambda: client.batches.retrieve(batch.id), lambda b: b.status == "completed", "openai batch")
    counts = done.request_counts
    check((counts.total, counts.completed, counts.failed) == (2, 1, 1), counts)
    realtime = client.chat.completions.create(model="gpt-4o-mini", messages=question)
    check(done.usage.total_tokens == realtime.usage.total_tokens, done.usage)
    output = [json.loads(text) for text in client.files.content(done.output_file_id).text.splitlines()]
    answer = output[0]["response"]["body"]["choices"][0]["message"]["content"]
    check(output[0]["custom_id"] == "hello" and answer == realtime.choices[0].message.content, output)
    errors = [json.loads(text) for text in client.files.content(done.error_file_id).text.splitlines()]
    check(errors[0]["custom_id"] == "boom" and errors[0]["response"]["status_code"] == 500, errors)

    other = create()
    cancelling = client.batches.cancel(other.id)
    check(cancelling.status == "cancelling", cancelling.status)
    wait_for(lambda: client.batches.retrieve(other.id), lambda b: b.status == "cancelled", "openai cancel")
    listed = client.batches.list(limit=1)
    check(listed.data[0].id == other.id and listed.has_more, listed)
    expect_error(openai.NotFoundError, lambda: client.batches.retrieve("batch_nope"), "openai unknown batch", 404)


def check_anthropic_batches():
    client = anthropic.Anthropic(base_url=ROOT, api_key=KEY, max_retries=0, timeout=10)
    params = {"model": "claude-sim", "max_tokens": 200, "messages": [{"role": "user", "content": "Say hello to the queue"}]}
    refused = {**params, "messages": [{"role": "user", "content": "Refuse me [sim batch=invalid]"}]}
    batch = client.messages.batches.create(
        requests=[{"custom_id": "hello", "params": params}, {"custom_id": "bad", "params": refused}]
    )
    check(batch.processing_status == "in_progress" and batch.request_counts.processing == 2, batch)
    check(batch.results_url is None, batch.results_url)
    ended = wait_for(
        lambda: client.messages.batches.retrieve(batch.id), lambda b: b.processing_status == "ended", "anthropic batch"
    )
    check((ended.request_counts.succeeded, ended.request_counts.errored) == (1, 1), ended.request_counts)
    results = {entry.custom_id: entry.result for entry in client.messages.batches.results(batch.id)}
    realtime = client.messages.create(**params)
    hello = results["hello"]
    check(hello.type == "succeeded" and hello.message.content[0].text == realtime.content[0].text, hello)
    check(hello.message.usage.output_tokens == realtime.usage.output_tokens, hello.message.usage)
    check(results["bad"].type == "errored" and results["bad"].error.error.type == "invalid_request_error", results["bad"])

    other = client.messages.batches.create(requests=[{"custom_id": "later", "params": params}])
    check(client.messages.batches.cancel(other.id).processing_status == "canceling", "anthropic cancel")
    wait_for(lambda: client.messages.batches.retrieve(other.id), lambda b: b.processing_status == "ended", "cancel")
    check([entry.result.type for entry in client.messages.batches.results(other.id)] == ["canceled"], "canceled")
    check(client.messages.batches.list(limit=1).data[0].id == other.id, "anthropic list")
    expect_error(
        anthropic.NotFoundError, lambda: client.messages.batches.retrieve("msgbatch_nope"), "anthropic unknown batch", 404
    )


def check_gemini_batches():
    options = gtypes.HttpOptions(
        base_url=ROOT, api_version="v1beta", timeout=10_000, retry_options=gtypes.HttpRetryOptions(attempts=1)
    )
    client = genai.Client(api_key=KEY, http_options=options)
    model = "gemini-2.5-flash"

    def request(text, key):
        return {"contents": [{"role": "user", "parts": [{"text": text}]}], "metadata": {"key": key}}

    def create(requests):
        return client.batches.create(model=model, src=requests, config={"display_name": f"sdk-{RUN}"})

    job = create([request("Say hello to the queue", "hello"), request("Fail me [sim batch=error]", "boom")])
    check(job.name.startswith("batches/") and job.state == gtypes.JobState.JOB_STATE_PENDING, job)
    check(job.display_name == f"sdk-{RUN}", job.display_name)
    done = wait_for(
        lambda: client.batches.get(name=job.name), lambda j: j.state == gtypes.JobState.JOB_STATE_SUCCEEDED, "gemini"
    )
    responses = done.dest.inlined_responses
    realtime = client.models.generate_content(model=model, contents="Say hello to the queue")
    check(responses[0].metadata == {"key": "hello"} and responses[0].response.text == realtime.text, responses[0])
    usage = responses[0].response.usage_metadata
    check(usage.total_token_count == realtime.usage_metadata.total_token_count, usage)
    check(responses[1].error is not None and responses[1].error.code == 13, responses[1])

    other = create([request("Later", "later")])
    client.batches.cancel(name=other.name)
    wait_for(
        lambda: client.batches.get(name=other.name), lambda j: j.state == gtypes.JobState.JOB_STATE_CANCELLED, "cancel"
    )
    listed = client.batches.list(config={"page_size": 1})
    check(listed[0].name == other.name, listed[0].name)
    expect_error(genai_errors.ClientError, lambda: client.batches.get(name="batches/nope"), "gemini unknown batch", 404)


def main():
    for family in (
        check_openai,
        check_anthropic,
        check_gemini,
        check_openai_batches,
        check_anthropic_batches,
        check_gemini_batches,
    ):
        family()
        print(f"{family.__name__}: ok")
    print(
        f"{checks.count} checks passed with openai {openai.__version__}, anthropic {anthropic.__version__}, "
        f"google-genai {genai.__version__}"
    )


if __name__ == "__main__":
    main()
