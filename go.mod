module github.com/imgbake/imgbake

go 1.26.8

require (
	github.com/google/go-cmp v0.7.0
	github.com/insomniacslk/dhcp v0.0.0-20250109001534-8abf58130905
	github.com/klauspost/compress v1.18.5
	github.com/openwall/yescrypt-go v1.0.0
	github.com/pin/tftp/v3 v3.2.0
	github.com/spf13/cobra v1.8.1
	github.com/ulikunitz/xz v0.5.15
	golang.org/x/crypto v0.41.0
	golang.org/x/sync v0.16.0
	golang.org/x/sys v0.43.0
	golang.org/x/term v0.41.0
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/inconshreveable/mousetrap v1.1.0 // indirect
	github.com/josharian/native v1.1.0 // indirect
	github.com/pierrec/lz4/v4 v4.1.26 // indirect
	github.com/spf13/pflag v1.0.5 // indirect
	github.com/stretchr/testify v1.10.0 // indirect
	github.com/u-root/uio v0.0.0-20230220225925-ffce2a382923 // indirect
	golang.org/x/net v0.43.0 // indirect
)
