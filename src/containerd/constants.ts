// containerd's own defaults, used as ours (`--containerd-sock`, `--containerd-namespace`) and by the classes here when
// they are not given a client. A small file of its own so the CLI's flag spec can name them without loading gRPC.

/** containerd's default gRPC socket. */
export const defaultSocket = '/run/containerd/containerd.sock'
/** The namespace the kubelet's CRI plugin keeps its images in. */
export const defaultNamespace = 'k8s.io'
