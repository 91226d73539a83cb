// The attribute goes on functions only.
use redis_retry::redis_retry;

#[redis_retry]
struct UserRepository;

fn main() {
    let _ = UserRepository;
}
