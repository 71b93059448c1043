//! The `wasi:http/incoming-handler` export: `POST /v1/quotes` goes to [`crate::quote`],
//! anything else is `404`.

use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

use crate::Answer;

/// Largest body read (Weir's `http.max_body_bytes` default is larger; quotes are small).
const MAX_BODY: usize = 1 << 20;

struct QuoteServer;

wasip2::http::proxy::export!(QuoteServer);

impl wasip2::exports::http::incoming_handler::Guest for QuoteServer {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let answer = match (request.method(), request.path_with_query().as_deref()) {
            (Method::Post, Some("/v1/quotes")) => match read_body(&request) {
                Some(body) => crate::quote(&body, &crate::catalog(), crate::now()),
                None => Answer::problem(400, "MALFORMED_JSON", "the body could not be read"),
            },
            _ => Answer::problem(404, "ROUTE_NOT_FOUND", "no such route"),
        };
        respond(out, &answer);
    }
}

fn read_body(request: &IncomingRequest) -> Option<Vec<u8>> {
    let body = request.consume().ok()?;
    let mut bytes = Vec::new();
    {
        let stream = body.stream().ok()?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(_)) => return None,
            }
            if bytes.len() > MAX_BODY {
                return None;
            }
        }
    }
    drop(IncomingBody::finish(body));
    Some(bytes)
}

fn respond(out: ResponseOutparam, answer: &Answer) {
    let headers = Fields::from_list(&[
        (
            "content-type".to_owned(),
            answer.content_type.as_bytes().to_vec(),
        ),
        (
            "content-length".to_owned(),
            answer.body.len().to_string().into_bytes(),
        ),
        ("cache-control".to_owned(), b"no-store".to_vec()),
    ])
    .expect("valid headers");
    let response = OutgoingResponse::new(headers);
    response
        .set_status_code(answer.status)
        .expect("a valid status");
    let body = response.body().expect("the body of a new response");
    ResponseOutparam::set(out, Ok(response));
    {
        let stream = body.write().expect("the stream of a new body");
        for chunk in answer.body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                return;
            }
        }
    }
    let _ = OutgoingBody::finish(body, None);
}
