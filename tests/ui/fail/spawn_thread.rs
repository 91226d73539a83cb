// A write in `std::thread::spawn`.
use redis_retry::redis_retry;

#[redis_retry]
async fn save_in_thread(client: redis::Client) {
    std::thread::spawn(move || {
        let mut conn = client.get_connection()?;
        redis::Commands::set::<_, _, ()>(&mut conn, "user:1", "v")
    });
}

fn main() {}
