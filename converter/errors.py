"""The one exception users see: every failure on bad input becomes a ConversionError.

:class:`InternalError` is the ConversionError for a converter bug met while converting: callers
still catch one type, and the CLI tells the two apart (exit 2 for bad input, 1 for a bug).
"""


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
