"""The counted assertion the SDK check scripts share: each `check` is one thing an SDK must
accept, and the total is printed at the end so a run that silently skipped checks shows it."""

count = 0


def check(condition, what):
    global count
    count += 1
    if not condition:
        raise AssertionError(what)
