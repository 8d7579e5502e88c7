"""The one exception users see: every failure on bad input becomes a ConversionError.

:class:`InternalError` is the ConversionError for a converter bug met while converting: callers
still catch one type, and the CLI tells the two apart (exit 2 for bad input, 1 for a bug).
What converts but deserves a word (weights the network does not use) is a
:class:`ConversionWarning`, issued through :mod:`warnings`. :func:`clip` shortens the text of
other libraries' exceptions quoted in a message without cutting a word or a quotation.
:func:`at_layer` marks any other exception escaping one layer's work with that layer, for
:func:`failing_layer` to name where a bug struck.
"""

import contextlib

# The most characters of another library's message quoted in one of ours.
QUOTED_CHARS = 300
# What opens a quotation in a message, with what closes it.
QUOTES = {"`": "`", '"': '"', "(": ")", "[": "]", "{": "}", "'": "'"}


class ConversionError(Exception):
    """A model that cannot be converted, with where the problem is.

    ``str(err)`` is a single line naming the file, the Caffe layer and the problem,
    ready to print as-is.
    """

    def __init__(self, message, *, file=None, layer=None, line=None, column=None):
        self.message = message
        self.file = str(file) if file is not None else None
        self.layer = layer
        self.line = line
        self.column = column
        super().__init__(str(self))

    def __str__(self):
        where = []
        if self.file:
            loc = self.file
            if self.line is not None:
                loc += f":{self.line}"
                if self.column is not None:
                    loc += f":{self.column}"
            where.append(loc)
        if self.layer:
            where.append(f"layer '{self.layer}'")
        text = " ".join(self.message.split())
        return f"{', '.join(where)}: {text}" if where else text


class InternalError(ConversionError):
    """A failure of the converter itself (not of the input), raised ``from`` the original error."""


class ConversionWarning(UserWarning):
    """Something the conversion passed over that the user may want to know (the command line
    prints each as one ``warning:`` line)."""


def clip(text, limit=QUOTED_CHARS):
    """``text`` on one line, at most about ``limit`` characters: cut after a whole word, before
    any quotation or bracket left open, and marked with ``…`` where it was cut."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    words = text[: limit + 1].split(" ")[:-1] or [text[:limit]]  # the last piece may be cut mid-word
    kept = " ".join(words)
    opened = _open_quotation(kept)
    if opened is not None and opened > 0:
        kept = kept[:opened].rstrip()
    return kept.rstrip(" ,;:") + " …"


def _open_quotation(text):
    """Where the first quotation or bracket still open at the end of ``text`` starts, or None.
    A ``'`` inside a word (Caffe's, don't) is an apostrophe, not a quote."""
    stack = []
    for i, c in enumerate(text):
        if stack and c == QUOTES[text[stack[-1]]] and (c != "'" or not _inside_word(text, i)):
            stack.pop()
        elif c in QUOTES and (c != "'" or not _inside_word(text, i)) and c not in ")]}":
            stack.append(i)
    return stack[0] if stack else None


def _inside_word(text, i):
    return 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()


@contextlib.contextmanager
def at_layer(name):
    """Work on the Caffe layer ``name`` (its shapes, weights or translation): an exception escaping
    it other than a ConversionError, a converter bug, is marked with the layer unless a layer
    nested in this work marked it already."""
    try:
        yield
    except ConversionError:
        raise
    except Exception as err:
        if failing_layer(err) is None:
            err.caffe_layer = name
        raise


def failing_layer(err):
    """The layer whose work raised ``err`` (see :func:`at_layer`), or None."""
    return getattr(err, "caffe_layer", None)
