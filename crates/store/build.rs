// `sqlx::migrate!` embeds the migrations at compile time; rebuild when they change
// (a new file in the directory included).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
