//! EtcdServer test guard (filled by the etcd work).
