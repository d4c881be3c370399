//! Headless Chromium for the dashboard's tests, driven through WebDriver (`fantoccini`): each
//! [`Browser`] starts its own `chromedriver` on a port it picks itself (`--port=0`, read back
//! from its first lines, so no port is found free and bound again) with its own Chromium
//! profile, and ends both when dropped.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver`, which
//! `scripts/test.sh` installs; without them a test fails saying so, never skips.

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// What a browser test says when Chromium is not installed.
const MISSING: &str = "the dashboard's browser tests need Debian's chromium and chromium-driver \
    (the chromium and chromedriver commands): run scripts/test.sh, which installs them, or \
    apt-get install chromium chromium-driver";

/// How long chromedriver may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Browser {
    pub client: Client,
    /// The Sluice under test: `http://HOST:PORT`.
    base_url: String,
    /// Where screenshots go: the test's temporary folder.
    screenshots: PathBuf,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

/// The path of `command` on `PATH`, if it is there.
fn which(command: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(command))
            .find(|path| path.is_file())
    })
}

impl Browser {
    /// A new headless Chromium on `base_url` (a Sluice's), saving screenshots in `dir`.
    pub async fn start(base_url: &str, dir: &Path) -> Browser {
        let chromium = which("chromium").unwrap_or_else(|| panic!("no chromium: {MISSING}"));
        let chromedriver =
            which("chromedriver").unwrap_or_else(|| panic!("no chromedriver: {MISSING}"));
        let mut driver = tokio::process::Command::new(chromedriver)
            .arg("--port=0")
            // A group of its own, with the Chromium it starts: ended together on drop.
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("chromedriver does not start ({e}): {MISSING}"));
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        let port = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(port) = line
                    .strip_prefix("ChromeDriver was started successfully on port ")
                    .and_then(|rest| rest.trim_end_matches('.').parse::<u16>().ok())
                {
                    return port;
                }
            }
            panic!("chromedriver ended without saying where it listens");
        })
        .await
        .expect("chromedriver says where it listens within 30 s");
        // Its later lines are not read: keep the pipe drained so it never blocks on it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let profile = tempfile::tempdir().unwrap();
        let capabilities = serde_json::json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // Tests run as root in a container: Chromium's sandbox cannot start there.
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--window-size=1440,1000",
                    "--lang=en-US",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("chromedriver starts Chromium ({e}): {MISSING}"));
        let screenshots = dir.join("screenshots");
        std::fs::create_dir_all(&screenshots).unwrap();
        Browser {
            client,
            base_url: base_url.to_string(),
            screenshots,
            _driver: driver,
            _profile: profile,
        }
    }

    /// Opens `path` (`/ui/jobs`) of the Sluice under test.
    pub async fn open(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base_url))
            .await
            .unwrap();
    }

    /// The path (and query) the browser shows now.
    pub async fn path(&self) -> String {
        let url = self.client.current_url().await.unwrap();
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Signs in on `/ui/login` (the form shown now, if it is: it goes back to the page that
    /// led there) with `token`, and waits for the page it leads to.
    pub async fn sign_in(&self, token: &str) {
        if !self.path().await.starts_with("/ui/login") {
            self.open("/ui/login").await;
        }
        let field = self.client.find(Locator::Css("#token")).await.unwrap();
        field.send_keys(token).await.unwrap();
        self.client
            .find(Locator::Css("section.login button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.client
            .wait()
            .for_element(Locator::Css("header.top .who"))
            .await
            .expect("signed in: the header names who");
    }

    /// Clicks the element `css` finds. A page's live parts are replaced as they refresh, so
    /// an element found a moment before may be gone (stale) when clicked: then it is found
    /// again (a click that failed did nothing).
    pub async fn click(&self, css: &str) {
        super::eventually(
            &format!("a click on {css:?}"),
            Duration::from_secs(15),
            async || -> Result<(), String> {
                let element = self
                    .client
                    .find(Locator::Css(css))
                    .await
                    .map_err(|e| e.to_string())?;
                element.click().await.map_err(|e| e.to_string())
            },
        )
        .await
    }

    /// Signs out from the header's button (on `/ui/jobs`) and waits for the sign-in form.
    pub async fn sign_out(&self) {
        self.open("/ui/jobs").await;
        self.click(".who button").await;
        self.client
            .wait()
            .for_element(Locator::Css("#token"))
            .await
            .expect("signed out: the sign-in form");
    }

    /// The text of the page's `main`, read again while the page is being replaced (a
    /// navigation or a live part's refresh leaves the element just found stale).
    pub async fn text(&self) -> String {
        super::eventually("the page's text", Duration::from_secs(15), async || {
            self.try_text().await
        })
        .await
    }

    async fn try_text(&self) -> Result<String, String> {
        let main = self
            .client
            .find(Locator::Css("main"))
            .await
            .map_err(|e| e.to_string())?;
        main.text().await.map_err(|e| e.to_string())
    }

    /// Waits until the page's `main` shows `needle` (in any case: headings are shown in
    /// capitals), failing with what it shows instead.
    pub async fn wait_for_text(&self, needle: &str) -> String {
        super::eventually(
            &format!("the page to show {needle:?}"),
            Duration::from_secs(15),
            async || {
                let text = self.try_text().await?;
                if text.to_lowercase().contains(&needle.to_lowercase()) {
                    Ok(text)
                } else {
                    Err(text)
                }
            },
        )
        .await
    }

    /// Saves the window as `NAME.png` in the test's folder (and in `SLUICE_SCREENSHOTS`, a
    /// folder kept after the test, when it is set).
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, &png).unwrap();
        if let Some(kept) = std::env::var_os("SLUICE_SCREENSHOTS") {
            std::fs::create_dir_all(&kept).unwrap();
            std::fs::write(Path::new(&kept).join(format!("{name}.png")), &png).unwrap();
        }
        path
    }

    /// Runs `script` in the page and returns what it returns.
    pub async fn run(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, Vec::new()).await.unwrap()
    }

    pub async fn close(self) {
        self.client.clone().close().await.unwrap();
    }
}

impl Drop for Browser {
    /// Ends chromedriver and the Chromium it started (a test that failed never closed its
    /// session, and Chromium outlives a killed chromedriver): the whole process group.
    fn drop(&mut self) {
        if let Some(pid) = self._driver.id() {
            let group = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    }
}
