module replaybus/loadtests/gen

go 1.19
