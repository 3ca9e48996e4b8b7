module neurallog.io/localcluster/server-standin

go 1.26.0
