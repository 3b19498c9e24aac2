"""Recording the calls a module's function receives, for tests that check what the code
under test asks of a lower layer (which gradients, which thread count, which backend)."""


def record_calls(monkeypatch, module, name, order=None):
    """Replace ``module.name`` (for the test's duration) by a wrapper that calls it and
    appends ``(args, kwargs, result)`` to the returned list; with ``order``, a list, the
    wrapper also appends ``name`` there, so that calls to several functions keep their
    sequence."""
    calls = []
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append((args, kwargs, result))
        if order is not None:
            order.append(name)
        return result

    monkeypatch.setattr(module, name, wrapper)
    return calls
