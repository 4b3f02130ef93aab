module github.com/schedsync/schedsync

go 1.26.8
