// Several reads and no write: the error names them and points at the first.
use std::collections::HashMap;

use redis::AsyncCommands;
use redis_retry::{redis_retry, RetryConnection};

type Conn = RetryConnection<redis::aio::ConnectionManager>;

#[redis_retry]
async fn load_profile(
    conn: &mut Conn,
    uuid: &str,
) -> redis::RedisResult<(HashMap<String, String>, Vec<String>)> {
    if !conn.exists::<_, bool>(format!("user:info:{uuid}")).await? {
        return Ok(Default::default());
    }
    let info: HashMap<String, String> = conn.hgetall(format!("user:info:{uuid}")).await?;
    let friends: Vec<String> = conn.smembers(format!("friends:{uuid}")).await?;
    let _top: Vec<String> = conn.zrange("board", 0, 9).await?;
    Ok((info, friends))
}

fn main() {}
