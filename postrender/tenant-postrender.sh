#!/bin/sh
# The command of the Helm 4 plugin (plugin.yaml). Runs the installed console script when there is one (its
# interpreter has PyYAML); otherwise the package shipped beside this file, with python3 from PATH.
if command -v tenant-postrender >/dev/null 2>&1; then
    set -- tenant-postrender "$@"
else
    PYTHONPATH="$HELM_PLUGIN_DIR${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONPATH
    set -- python3 -m tenant_postrender "$@"
fi
# Helm 4.3 keeps a post-renderer plugin's stderr to itself and reports only "plugin exited with error", so
# the list of violations goes to helm's own stderr, for the user to read. Only when that is a pipe or a
# terminal: opened again, a regular file has its own offset, and helm's next write would land over ours.
helm_stderr="/proc/$PPID/fd/2"
if [ -w "$helm_stderr" ] && { [ -p "$helm_stderr" ] || [ -c "$helm_stderr" ]; }; then
    exec "$@" 2>>"$helm_stderr"
fi
exec "$@"
