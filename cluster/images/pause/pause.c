/*
 * The sandbox ("pause") process of every pod on the local cluster's real node: it holds the pod's namespaces,
 * waits for a signal, reaps the zombies of processes that end up as its children (PID 1 of a shared PID
 * namespace), and exits on SIGINT or SIGTERM, which is how the runtime stops a pod sandbox.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int signal_number) {
    (void)signal_number;
    _exit(0);
}

static void reap(int signal_number) {
    (void)signal_number;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        puts("pause (neurallog local cluster) 3.10");
        return 0;
    }
    if (getpid() != 1) {
        /* As the upstream pause does: it works anywhere, but only means something as PID 1. */
        fputs("pause: warning: not running as PID 1\n", stderr);
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    sigemptyset(&action.sa_mask);
    action.sa_handler = stop;
    if (sigaction(SIGINT, &action, NULL) < 0 || sigaction(SIGTERM, &action, NULL) < 0) {
        return 1;
    }
    action.sa_handler = reap;
    action.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    if (sigaction(SIGCHLD, &action, NULL) < 0) {
        return 2;
    }
    for (;;) {
        pause();
    }
    return 42;
}
