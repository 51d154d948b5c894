class ExplorerError(Exception):
    """A problem caused by what the person asked for (unknown model, bad input size, ...).

    The message is one line meant to be shown as it is: the CLI prints it and exits
    non-zero, pages show it in an error box.
    """
