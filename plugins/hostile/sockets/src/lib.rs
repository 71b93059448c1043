//! Hostile test plugin `hostile-sockets`: `place-order` opens a TCP connection with
//! `std::net::TcpStream`, so the component imports `wasi:sockets` interfaces, which the host
//! does not provide: admission must refuse it (at link time) before any call. Never deploy it.

use std::net::TcpStream;

use weir_sdk::{
    OrderError, OrderEvent, OrderRequest, OrderSnapshot, OrderStatus, Plugin, PluginInfo,
    PricedOrder,
};

/// The hostile plugin.
pub struct Hostile;

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        PluginInfo::new("hostile-sockets", env!("CARGO_PKG_VERSION"), vec![])
    }

    fn place_order(_request: OrderRequest) -> Result<PricedOrder, OrderError> {
        let outcome = match TcpStream::connect("127.0.0.1:9") {
            Ok(_) => "connected to 127.0.0.1:9".to_owned(),
            Err(e) => format!("connect 127.0.0.1:9: {e}"),
        };
        let mut end = outcome.len().min(200);
        while !outcome.is_char_boundary(end) {
            end -= 1;
        }
        Err(OrderError::unavailable(&outcome[..end]))
    }

    fn transition(order: OrderSnapshot, _event: OrderEvent) -> Result<OrderStatus, OrderError> {
        Ok(order.status)
    }
}

weir_sdk::export_plugin!(Hostile);
