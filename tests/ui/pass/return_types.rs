// The run-time check looks for a Redis error in whatever the function returns: every return
// type compiles, errors that borrow and generic ones included.
#![deny(warnings)]
#![allow(dead_code)]

use std::error::Error;
use std::fmt;

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[derive(Debug)]
struct Borrowing<'a>(&'a str);

impl fmt::Display for Borrowing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Error for Borrowing<'_> {}

#[redis_retry]
async fn boxed(conn: &mut Conn) -> Result<(), Box<dyn Error + Send + Sync>> {
    conn.del::<_, ()>("k").await?;
    Ok(())
}

#[redis_retry]
async fn borrowing<'a>(conn: &mut Conn, name: &'a str) -> Result<(), Borrowing<'a>> {
    conn.del::<_, ()>("k").await.map_err(|_| Borrowing(name))
}

#[redis_retry]
async fn generic<E: From<redis::RedisError>>(conn: &mut Conn) -> Result<(), E> {
    conn.del::<_, ()>("k").await?;
    Ok(())
}

#[redis_retry]
async fn not_a_result(conn: &mut Conn) -> Option<usize> {
    conn.del::<_, usize>("k").await.ok()
}

#[redis_retry]
async fn opaque(conn: &mut Conn) -> impl fmt::Debug {
    conn.del::<_, usize>("k").await
}

fn main() {}
